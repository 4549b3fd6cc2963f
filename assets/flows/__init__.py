"""One module per revenue flow; `boundary` holds what every boundary asset and check shares."""
