# A VPC for Direct VPC egress from Cloud Run and private services access for Cloud SQL (no public IP).

resource "google_compute_network" "pubq" {
  project                 = var.project_id
  name                    = "pubq-${var.environment}"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "run" {
  project                  = var.project_id
  name                     = "pubq-${var.environment}-run"
  region                   = var.region
  network                  = google_compute_network.pubq.id
  ip_cidr_range            = var.network_cidr
  private_ip_google_access = true
}

resource "google_compute_global_address" "private_services" {
  project       = var.project_id
  name          = "pubq-${var.environment}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.pubq.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.pubq.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}
