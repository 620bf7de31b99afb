"""Speed layer: faust-streaming processors that keep user vectors and hot tables current."""
