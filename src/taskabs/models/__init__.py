"""Network architectures. Each file holds architecture only; training lives in taskabs.train."""
