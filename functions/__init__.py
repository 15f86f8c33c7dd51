"""Thin adapters: parse the trigger, call common/, shape the response."""
