"""rnnzoo's built-in plugins: they register through the same hooks as any other."""
