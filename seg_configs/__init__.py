"""UperNet ADE20k transfer configs (one per method and size); files compose by importing each other."""
