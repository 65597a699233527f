"""shelfcast streaming service: orders in, forecasts and low-stock alerts out."""
