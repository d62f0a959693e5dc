"""Action-customization methods, one per file, all behind `methods.base.ActionMethod`."""
