"""Getting raw files: the one download engine, pinned source lists, raw-copy checks."""
