"""Everything kept on plain files under DATA_DIR: voices, VC inputs, outputs and their metadata."""
