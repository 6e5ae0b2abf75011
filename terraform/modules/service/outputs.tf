output "service_account_email" {
  description = "Email of the service account the binary runs as."
  value       = google_service_account.this.email
}

output "member" {
  description = "IAM member string of the service account (serviceAccount:EMAIL)."
  value       = local.member
}

output "database_user" {
  description = "IAM database user name (PUBQ_DATABASE_USER), or null without sql_instance."
  value       = var.sql_instance == null ? null : local.database_user
}

output "url" {
  description = "Cloud Run service URL, or null when not deployed."
  value       = try(google_cloud_run_v2_service.this[0].uri, null)
}

output "service_name" {
  description = "Cloud Run service name, or null when not deployed."
  value       = try(google_cloud_run_v2_service.this[0].name, null)
}
