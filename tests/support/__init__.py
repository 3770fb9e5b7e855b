"""What the tiers share: waiting, the short phase profile, inner pytest runs, leftovers checks,
the catalogue's cases and seeded fakes."""
