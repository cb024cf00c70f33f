"""Work that follows a store or a request: forwarding, research exports."""
