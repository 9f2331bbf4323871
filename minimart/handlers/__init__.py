"""One plain function per saga step: (event, ports) -> the events it leads to."""
