"""The store's services (the catalog; later pickups and orders), each owning its tables."""
