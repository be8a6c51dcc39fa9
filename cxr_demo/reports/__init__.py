"""What the zoo measured about itself: the leaderboard read from every checkpoint's metrics.json."""
