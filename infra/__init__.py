"""Starting and stopping the local services (Tansu broker, Redis), and topic creation."""
