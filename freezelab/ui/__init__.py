"""What people look at: plots, widgets, reports and notebook scale presets."""
