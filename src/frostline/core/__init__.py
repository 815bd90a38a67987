"""Framework-neutral core: leaves, selectors, groups, plans and masks. Imports no framework."""
