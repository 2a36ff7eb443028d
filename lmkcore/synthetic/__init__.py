"""The built-in synthetic cephalogram generator: anatomy, rendering, simulated observers with
declared annotation covariances (the known truth uncertainty estimates are scored against)."""
