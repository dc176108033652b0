/*
 * The one system call CometKMS needs that Node.js does not expose: flock(2), used for the
 * exclusive lock on a node's home (src/store/lock.ts). A flock lock belongs to the open file
 * description of the lock file's inode, so it holds across bind mounts, symlinks, mount and
 * network namespaces (two containers on one volume), and the kernel releases it when the
 * process dies in any way, SIGKILL included.
 */
#include <errno.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>

/* tryLockExclusive(fd: number): boolean. true: this process now holds the lock; false: another
 * open file description holds it. Any other failure throws (code = errno name, e.g. EBADF). */
static napi_value try_lock_exclusive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "tryLockExclusive(fd) needs one file descriptor");
    return NULL;
  }
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  napi_value result;
  if (rc == 0 || errno == EWOULDBLOCK) {
    napi_get_boolean(env, rc == 0, &result);
    return result;
  }
  char message[160];
  snprintf(message, sizeof message, "flock(%d) failed: %s", fd, strerror(errno));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "tryLockExclusive", NAPI_AUTO_LENGTH, try_lock_exclusive, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "tryLockExclusive", fn) != napi_ok) {
    return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
