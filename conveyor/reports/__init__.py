"""Reports people look at rather than read: static SVG/HTML, no server, no plotting library."""
