{
  "targets": [
    {
      "target_name": "cometkms_flock",
      "sources": ["flock.c"]
    }
  ]
}
