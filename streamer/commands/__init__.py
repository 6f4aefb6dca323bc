"""The command line: ``streamer run | demo | predict | video | listen | serve | keygen``."""
