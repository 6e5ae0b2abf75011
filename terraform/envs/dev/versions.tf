terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10, < 8.0"
    }
  }

  # Keep state in a versioned GCS bucket created out of band (see terraform/README.md):
  # backend "gcs" {
  #   bucket = "PROJECT-tfstate"
  #   prefix = "pubq/dev"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
