"""HTTP routes; each module knows HTTP and calls the registry, nothing deeper."""
