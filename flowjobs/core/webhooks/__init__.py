"""Webhook signature schemes and trigger auth settings: pure parts of webhook ingress."""
