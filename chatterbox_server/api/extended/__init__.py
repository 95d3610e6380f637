"""The Extended API family under /api/v1: checked speech with candidates and exports, voice conversion,
concatenation, voices, output files and operations."""
