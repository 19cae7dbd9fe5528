"""CLI commands, one module each; ``harness.cli`` registers them."""
