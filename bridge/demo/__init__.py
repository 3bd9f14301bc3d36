"""The demo page written beside every web model (`page`) and `bridge serve`, the static server for it (`server`)."""
