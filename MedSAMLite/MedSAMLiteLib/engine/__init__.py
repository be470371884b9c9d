"""The engine: inference in a child process beside Slicer, so Slicer's main thread never waits on it.

`client` is Slicer's side (standard library and numpy), `server` the child process that builds the
backends and runs the core, `protocol` the messages both import.
"""
