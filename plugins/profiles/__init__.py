"""Hardware profiles: what each platform allows."""
