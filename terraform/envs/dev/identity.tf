# pubqctl (on-call CLI) runs as its own service account, impersonated by ops_members: it reads the
# dead-letter inspection subscriptions, replays to queue topics and reads Postgres.

resource "google_service_account" "pubqctl" {
  project      = var.project_id
  account_id   = "pubq-${var.environment}-pubqctl"
  display_name = "pubq pubqctl (on-call)"
}

resource "google_service_account_iam_member" "pubqctl_impersonators" {
  for_each = var.ops_members

  service_account_id = google_service_account.pubqctl.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.value
}

resource "google_project_iam_member" "pubqctl_sql" {
  for_each = toset(["roles/cloudsql.client", "roles/cloudsql.instanceUser"])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.pubqctl.email}"

  condition {
    title      = "pubq-${google_sql_database_instance.pubq.name}"
    expression = "resource.name == \"projects/${var.project_id}/instances/${google_sql_database_instance.pubq.name}\""
  }
}

resource "google_sql_user" "pubqctl" {
  project  = var.project_id
  instance = google_sql_database_instance.pubq.name
  name     = trimsuffix(google_service_account.pubqctl.email, ".gserviceaccount.com")
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}
