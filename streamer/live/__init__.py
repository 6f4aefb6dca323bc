"""The live path: frames and results between threads, pacing, dispatching requests, and the pipeline."""
