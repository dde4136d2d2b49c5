"""The client side: what runs on an organisation's node (or a virtual client)."""
