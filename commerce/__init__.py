"""The shop's data: merchants, products, customers, feedback and served slates."""
