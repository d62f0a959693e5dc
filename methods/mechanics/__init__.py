"""Training mechanics shared by the methods: each lives once here, and methods compose them."""
