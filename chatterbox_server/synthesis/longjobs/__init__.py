"""Long-text jobs: whole books and articles synthesized in the background, durable across restarts."""
