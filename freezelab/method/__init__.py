"""The method (book/method.md): trace, lenses, scaling law, gains, plan."""
