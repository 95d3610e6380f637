"""Durable state: the SQL database shared by every front worker and instance."""
