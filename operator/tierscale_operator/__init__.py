"""tierscale operator: reconciles RecommenderDeployment resources and runs the control loop."""
