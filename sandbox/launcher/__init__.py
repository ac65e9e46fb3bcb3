"""The launcher: the caller's side (API, IPC reader, result assembly)."""
