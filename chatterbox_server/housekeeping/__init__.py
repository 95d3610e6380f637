"""Work no request asks for: sweeping DATA_DIR/tmp and applying output retention on a timer."""
