"""E-mail notifications: opt-in per user, one row per (what, recipient), sent exactly once."""
