"""Durable state under DATA_DIR: plain files (voices, VC inputs, outputs and their metadata) and the
SQL database of long-text jobs and request history shared by every front worker and instance."""
