"""Optional integrations with model zoos and training libraries; each imports its library lazily."""
