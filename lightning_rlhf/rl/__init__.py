"""Pure torch RL functions: no Lightning import anywhere in this package."""
