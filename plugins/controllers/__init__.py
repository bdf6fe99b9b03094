"""Built-in gradient controllers."""
