"""The detection API: the HTTP client, checks on its answers, and the retry policy (backoff, breaker)."""
