# Producer API tokens: the secret only. Add its value out of band (never in state):
#   printf '%s' "$TOKENS" | gcloud secrets versions add pubq-dev-api-tokens --data-file=-
resource "google_secret_manager_secret" "api_tokens" {
  project   = var.project_id
  secret_id = "pubq-${var.environment}-api-tokens"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# queues.yaml is not secret; Secret Manager is how Cloud Run mounts a file, and each change of the file
# is a new version, hence a new revision running exactly the config the topics were created from.
resource "google_secret_manager_secret" "queues" {
  project   = var.project_id
  secret_id = "pubq-${var.environment}-queues"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "queues" {
  secret      = google_secret_manager_secret.queues.id
  secret_data = file(local.queues_file)
  # A changed queues.yaml makes a new version; the running revision mounts the old one by number until
  # its replacement is ready, and a rollback needs it: keep it (disable by hand when done).
  deletion_policy = "ABANDON"
  lifecycle {
    create_before_destroy = true
  }
}
