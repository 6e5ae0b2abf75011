# Cloud SQL Postgres 15: IAM database authentication, private IP only. No passwords are set here, so
# none end up in state; the binaries log in as their service accounts through cloudsqlconn.

resource "google_sql_database_instance" "pubq" {
  project             = var.project_id
  name                = "pubq-${var.environment}"
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.sql_deletion_protection

  settings {
    tier              = var.sql_tier
    edition           = "ENTERPRISE"
    availability_type = var.sql_availability_type
    disk_autoresize   = true
    user_labels       = local.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.pubq.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    database_flags {
      name  = "cloudsql.iam_authentication"
      value = "on"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }

    insights_config {
      query_insights_enabled = true
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "pubq" {
  project  = var.project_id
  instance = google_sql_database_instance.pubq.name
  name     = var.database_name
}
