/*
 * A PKCS#11 fault layer for the chaos harness (test only; never shipped).
 *
 * Stacked as  cometkms -> this shim -> pkcs11-spy -> SoftHSM,  it hands the caller the next
 * module's own function list with two entries replaced, C_SignInit and C_Sign, so every other call reaches the
 * next module untouched. Before each C_SignInit and C_Sign it reads one line from the file named by
 * CHAOS_SHIM_CONTROL (absent or empty: pass through):
 *
 *   fail <rv>     C_SignInit returns <rv> (decimal) without calling the next module, so no
 *                 operation is left active in the token (a failed C_Sign would have to end the
 *                 real operation, which only a real sign can do)
 *   delay <ms>    sleep <ms> milliseconds, then forward
 *   close <gen>   once per distinct <gen>: close the session in the next module, then forward
 *                 (the real module then answers CKR_SESSION_HANDLE_INVALID, as when a token
 *                 drops a session under the node)
 *
 * Because the faults happen above the spy, the witness still records exactly what reached the
 * HSM. CHAOS_SHIM_NEXT names the next module (the spy).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType(*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType(*name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include "pkcs11.h"

static CK_FUNCTION_LIST shim_list;
static CK_FUNCTION_LIST_PTR next_list;
static long last_close_gen = -1;

static void read_control(char *buf, size_t size) {
  buf[0] = '\0';
  const char *path = getenv("CHAOS_SHIM_CONTROL");
  if (path == NULL) return;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  buf[n > 0 ? n : 0] = '\0';
}

static CK_RV shim_sign_init(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
  char ctl[128];
  long arg = 0;
  read_control(ctl, sizeof ctl);
  if (sscanf(ctl, "fail %ld", &arg) == 1) return (CK_RV)arg;
  return next_list->C_SignInit(session, mechanism, key);
}

static CK_RV shim_sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len, CK_BYTE_PTR sig,
                       CK_ULONG_PTR sig_len) {
  char ctl[128];
  long arg = 0;
  read_control(ctl, sizeof ctl);
  if (sscanf(ctl, "delay %ld", &arg) == 1 && arg > 0) {
    struct timespec ts = {arg / 1000, (arg % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  if (sscanf(ctl, "close %ld", &arg) == 1 && arg != last_close_gen) {
    last_close_gen = arg;
    next_list->C_CloseSession(session);
  }
  return next_list->C_Sign(session, data, data_len, sig, sig_len);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
  if (out == NULL) return CKR_ARGUMENTS_BAD;
  if (next_list == NULL) {
    const char *next = getenv("CHAOS_SHIM_NEXT");
    if (next == NULL) return CKR_GENERAL_ERROR;
    void *lib = dlopen(next, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) return CKR_GENERAL_ERROR;
    CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList");
    if (get == NULL) return CKR_GENERAL_ERROR;
    CK_RV rv = get(&next_list);
    if (rv != CKR_OK) return rv;
    shim_list = *next_list;
    shim_list.C_SignInit = shim_sign_init;
    shim_list.C_Sign = shim_sign;
  }
  *out = &shim_list;
  return CKR_OK;
}
