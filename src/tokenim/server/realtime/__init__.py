"""Connected devices and fan-out. The hub is in-process; a broker can replace it behind the same methods."""
