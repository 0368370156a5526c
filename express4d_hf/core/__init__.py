"""The core floor: motion data, ARKit channels, protocol constants, normalisation statistics and atomic file
output. Every layer of the package may import it; it imports nothing else of the package."""
