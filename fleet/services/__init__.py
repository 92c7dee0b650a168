"""Every write to the fleet goes through a service here: typed, atomic, audited."""
