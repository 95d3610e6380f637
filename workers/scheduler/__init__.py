"""How a model worker orders its work: batch selection, parked jobs and time estimates. No I/O."""
